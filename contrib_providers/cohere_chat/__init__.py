"""Sample Cohere chat provider plugin."""
