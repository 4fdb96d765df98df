"""Bridges to tools users already have: lm-evaluation-harness (a `ptmoe` model and offline tasks),
Hugging Face PEFT (adapter folders both ways) and the model card written with every adapter."""
