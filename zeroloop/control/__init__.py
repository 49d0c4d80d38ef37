"""What an operator sees and does, shared by the CLI, the dashboard and the JSON API: views, actions, tokens."""
