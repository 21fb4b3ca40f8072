"""Training: the shared loop (trainer_utils.py), the stage scripts (train_*.py) and the RL pieces."""
