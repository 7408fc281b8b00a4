"""The API's routes, one module per resource; each route parses, calls the service, serialises."""
