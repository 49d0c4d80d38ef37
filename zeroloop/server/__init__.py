"""`zeroloop serve`, HTTP only: the worker API, the dashboard, its JSON API and `/metrics` over the control package."""
