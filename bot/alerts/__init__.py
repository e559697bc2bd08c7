"""Mood alerts for moderators (issue 28): `detector` decides from counts alone (pure, for the bot and the replay
benchmark), `message` builds the alert and its buttons; the loop that posts them is bot/cogs/alerts.py."""
