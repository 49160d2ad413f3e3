"""When and where broadcasts play: broadcasts, recurrences, airings and proof of play."""
