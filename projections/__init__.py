"""The read side: projections of the event log into queryable read models."""
