"""What training and inference share: the model interface, model cards, and loading from artifacts."""
