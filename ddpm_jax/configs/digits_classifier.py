"""A noise-conditional classifier of the embedded 8×8 digits for classifier guidance of the
demo model (configs/demo.py): the U-Net's encoder half (model.name 'half_unet') trained on
digits noised by the demo's chain (classifier.process 'ddpm', the same diffusion.*), about a
minute on a laptop CPU. Then sample the demo model guided to each digit (labels 0–9 in turn):

  python -m ddpm_jax.main --config configs/digits_classifier.py --workdir digits_classifier
  python -m ddpm_jax.main --config configs/demo.py --workdir demo_workdir --mode sample \\
      --config.sampling.classifier_workdir=digits_classifier --config.sampling.classifier_scale=2
"""

from ddpm_jax.configs import demo


def get_config():
  config = demo.get_config()
  config.training.objective = "classifier"
  config.classifier.process = "ddpm"
  config.model.name = "half_unet"
  config.training.num_train_steps = 2000
  config.training.ema_decay = 0.99
  config.training.checkpoint_every = 1000
  return config
