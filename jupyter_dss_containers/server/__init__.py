"""The Jupyter server extension: live kernel specs, permissions, REST API, reaping."""
