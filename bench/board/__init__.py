"""The statistics and site wing: paired intervals, ranks and comparisons, and the static leaderboard built from results/ alone (docs/architecture.md)."""
