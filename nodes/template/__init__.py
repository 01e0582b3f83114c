"""The template node plugin: copy this package to start a new node (see README, "Writing a node")."""
