"""Media storage and GIF handling."""
