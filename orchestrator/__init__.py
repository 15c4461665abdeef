"""The face of fgdsr: the Typer CLI, Ray Tune sweeps, MLflow tracking, the end-to-end pipeline."""
