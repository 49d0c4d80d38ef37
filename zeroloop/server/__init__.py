"""`zeroloop serve`: a stateless HTTP front to the store, so workers need no database credentials."""
