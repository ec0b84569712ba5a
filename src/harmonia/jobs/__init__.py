"""Jobs: records, state transitions, the queue and what a worker does with one job."""
