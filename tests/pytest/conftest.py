"""The pytest suite of kafkabox's pytest plugin (clients/python), run by tests/pytest_plugin.rs
with the kafkabox binary under test in $KAFKABOX_BIN. The plugin is installed into the venv by
scripts/test.sh (pip install ./clients/python), so its fixtures come from its entry point,
exactly as a user's suite gets them."""
