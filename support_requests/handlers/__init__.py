"""HTTP side: the app factory, auth, validation, problems and one module per tag."""
