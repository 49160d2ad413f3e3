"""Province -> optional district -> commune -> village -> node, with history."""
