"""The `ollama` family: LLM prompt helpers over Ollama or an OpenAI-compatible server.

`client` (the client contract and its errors), `backends` (Ollama and OpenAI wire protocols),
`structured` (schema-bounded answers), `schemas` + `tasks` (enhance_prompt, song_plan, lyrics),
`engine` (the job engine).
"""
