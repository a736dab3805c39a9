"""Training objectives: the DDPM losses (L_simple, VLB, hybrid), denoising score matching
(continuous and NCSN), EDM's loss, and the per-example noise they share."""
