"""The `jen1` family: free-text instructions -> a planned, arranged, rendered and mastered piece.

`input` (what a job asks), `interpret` + `planner` / `llm_planner` (a SongPlan), `composer` +
`melody` + `accompaniment` + `arrange` (a score), `parts` (one stem per part through the render,
musicgen and diffsinger engines), `engine` (the pipeline).
"""
