"""Privacy attacks on diffusion models and on the PFDM upload.

* Membership inference: per-sample scores, LOWER means "member". All three attacks query a
  full-chain noise predictor `EpsFn` (eps_hat of x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps):
  - `loss_attack`  ||eps_hat(x_t, t) - eps||^2 averaged over fixed steps and seeded noises
                   (Matsumoto et al. 2023; Carlini et al. 2023);
  - `secmi`        SecMI_stat (Duan et al., ICML 2023): deterministic DDIM inversion
                   x_0 -> x_{t_sec} in steps of k, one step up to t_sec + k and back down;
                   score ||x_{t_sec} - x~_{t_sec}||^2;
  - `pia`          PIA (Kong et al., ICLR 2024): eps_0 = eps_hat(x_0, 0),
                   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps_0, score ||eps_hat(x_t, t) - eps_0||_p^p.
  `roc_metrics` gives ROC AUC, TPR at 1% and 0.1% FPR and the curve (scikit-learn).
* Memorization (`memorization`): d(x, NN1) / d(x, NN2) of each generated image against the
  training set; below 1/3 counts as a copy (Yoon et al. 2023; Gu et al. 2023).
* Reconstruction (`reconstruction_attack`): denoise the upload x_tilde from t0 back to x_0;
  SSIM, l2, classifier accuracy and re-identification among the N candidates (explore.py).
* Audit (`audit_upload`): distinguish uploads of the worst-case neighbours x, x' with ||x - x'|| = 2C;
  the threshold tau is chosen on calibration trials, and the Clopper-Pearson bounds on the test's FPR / FNR
  on fresh trials give a (1 - alpha) lower confidence bound
  eps_lb = log((1 - delta - FNR_hi) / FPR_hi)  (Jagielski et al. 2020, Nasr et al. 2021),
  which must stay below both accountants' eps; `eps_max` is the most the trial count can show.
"""
from pfdm_core.attacks.audit import *  # noqa: F401,F403
from pfdm_core.attacks.common import *  # noqa: F401,F403
from pfdm_core.attacks.membership import *  # noqa: F401,F403
from pfdm_core.attacks.memorization import *  # noqa: F401,F403
from pfdm_core.attacks.reconstruction import *  # noqa: F401,F403
