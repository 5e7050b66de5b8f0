"""The one place that says which Parley and which wire protocol this is."""

APP_NAME = "Parley"
APP_VERSION = "0.1.0"
PROTOCOL_VERSION = 1
