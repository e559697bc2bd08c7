"""One cog per concern: emotions (analysis), admin (settings), mood (statistics and summaries)."""
