"""The plugin SDK: what a provider or transform plugin imports from aiport."""
