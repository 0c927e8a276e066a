"""Training diagnostics that read the model's weights (not just the loss)."""
