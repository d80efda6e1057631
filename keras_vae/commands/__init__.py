"""Command-line commands, one module each, each with its own absl flags and `main(argv)`."""
