"""The studio's page: one module per tab (layout and wiring), the endpoints' handlers, and what they share."""
