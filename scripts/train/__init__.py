"""The train step (workflow/rules/train.smk): models, training, inference and Grad-CAM."""
