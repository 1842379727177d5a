"""risk: decides approve / review / deny before any channel is charged."""
