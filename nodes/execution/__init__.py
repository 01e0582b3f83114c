"""execution-service: approved signals become orders, broker fills and errors move them, positions follow."""
