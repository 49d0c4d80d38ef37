"""The worker's side of `zeroloop serve`: the same operations as the store's managers, over HTTP."""
