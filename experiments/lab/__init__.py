"""The fault lab: the article's workload, jobs that misbehave on cue, and a harness that watches a run from outside."""
