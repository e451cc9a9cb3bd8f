"""Probes of CLIP steering on the bundled models (docs/clip-steering.md): what reaches the named emoji, judged by the
nearest real emoji (bench.steering) on names drawn at random from the data set. Scratch measurements for choosing
levers, not the bench's bars.

    python bench/steering_probes.py oracle --settings 1,1 3,1 [--cosine 0.3]   # a step toward the named image itself
    python bench/steering_probes.py loss --settings 3,1 6,1 [--kind softmax] [--clip-state S]  # the app's loop
    python bench/steering_probes.py particles --particles 4 --steps 20 --lam 50   # Feynman-Kac resampling
    python bench/steering_probes.py classifier --cg 5 --clip-state S              # classifier guidance on x_t
    python bench/steering_probes.py alignment [--smooth 8,0.3] [--on xt]          # where the gradient points
    python bench/steering_probes.py classifier --kind bayes --edit --cg 10        # the Bayes-optimal classifier
    python bench/steering_probes.py prior --settings 10,1 --temperature 100 1000  # data-set guidance: CLIP's prior

Each prints the top-1 / top-3 hit rates over `--names` names x `--seeds` seeds (default 10 x 2) and seconds per
delivered image. `--clip-state` loads a fine-tuned state dict into the guiding CLIP (float32).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.emoji_quality import NAMES  # noqa: E402
from bench.steering import RANDOM_NAMES_SEED, NearestJudge, hit_rates, random_names  # noqa: E402
from guidance import GuidanceTerm, guided_sample  # noqa: E402
from guidance.prediction import model_output_from_x0_and_eps, predicted_x0_and_eps  # noqa: E402
from guidance.sampler import guidance_weights, normalise_per_sample, step_alphas  # noqa: E402
from pipelines.bundled import BUNDLED_LABEL  # noqa: E402
from pipelines.clip import get_clip  # noqa: E402
from pipelines.unconditional import get_unconditional, make_scheduler  # noqa: E402
from training.build_emoji_dataset import load_dataset  # noqa: E402


class Probe:
    """The bundled DDPM and guiding CLIP, the data set at 32 px, every name's text embedding and the judge."""

    def __init__(self, clip_state: str = ""):
        data = load_dataset()
        self.names = [str(name) for name in data["names"]]
        self.judge = NearestJudge(data["images"])
        pixels = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float() / 255 * 2 - 1
        self.real = F.interpolate(pixels, size=(32, 32), mode="area")
        self.ddpm = get_unconditional(BUNDLED_LABEL)
        self.prediction_type = self.ddpm.scheduler_config["prediction_type"]
        clip = get_clip(BUNDLED_LABEL)
        self.clip = clip.model.float().eval().requires_grad_(False)
        if clip_state.endswith(".safetensors"):  # an export (training/train_noise_aware_clip.py --out)
            from safetensors.torch import load_file

            self.clip.load_state_dict({key: value.float() for key, value in load_file(clip_state).items()})
        elif clip_state:
            self.clip.load_state_dict(torch.load(clip_state))
        self.mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(clip.std).view(1, 3, 1, 1)
        self.size = clip.image_size
        with torch.no_grad():
            tokens = clip.tokenizer(self.names)
            texts = torch.cat([self.clip.encode_text(tokens[i : i + 512]) for i in range(0, len(tokens), 512)])
        self.texts = F.normalize(texts.float(), dim=-1)
        self.logit_scale = self.clip.logit_scale.exp().item()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit CLIP embeddings of images in [-1, 1] (32 px), seen as ClipLoss's whole-image cutout sees them: clamped
        to [0, 1] (straight through), resampled to the CLIP's input."""
        images = (images + 1) / 2
        images = images + (images.clamp(0, 1) - images).detach()
        images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return F.normalize(self.clip.encode_image((images - self.mean) / self.std).float(), dim=-1)

    def log_probability(self, images: torch.Tensor, name: int, smooth: tuple[int, float] = (0, 0.0)) -> torch.Tensor:
        """log p(name | image) over all the data set's names (the CLIP's softmax); with `smooth` (copies, sigma) the
        mean over that many copies with Gaussian noise of that sigma added (randomized smoothing: a smoother
        classifier, whose gradient follows the image more than the pixels)."""
        copies, sigma = smooth
        if copies:
            generator = torch.Generator().manual_seed(0)
            noise = torch.randn((copies, *images.shape), generator=generator) * sigma
            noisy = (images[None] + noise).flatten(0, 1)
            return self.log_probability(noisy, name).view(copies, -1).mean(0)
        logits = self.logit_scale * self.features(images) @ self.texts.T
        return logits[:, name] - torch.logsumexp(logits, dim=1)

    def bayes_log_probability(self, noisy: torch.Tensor, alpha: torch.Tensor, name: int) -> torch.Tensor:
        """log p(name | x_t) of the Bayes-optimal noisy classifier over the data set (one image per name, uniform
        prior): x_t = sqrt(a) x_j + sqrt(1 - a) noise. The upper bound of what a noise-aware CLIP can learn."""
        flat, images = noisy.flatten(1), self.real.flatten(1)
        squared = (flat**2).sum(1, keepdim=True) - 2 * alpha.sqrt() * flat @ images.T + alpha * (images**2).sum(1)[None]
        logits = -squared / (2 * (1 - alpha))
        return logits[:, name] - torch.logsumexp(logits, dim=1)

    def scheduler(self, steps: int):
        """A fresh DDIM scheduler of the bundled DDPM with `steps` timesteps set."""
        scheduler = make_scheduler("DDIM", self.ddpm.scheduler_config)
        scheduler.set_timesteps(steps)
        return scheduler


def data_set_loss(probe: Probe, name: int, temperature: float):
    """The app's data-set guidance loss toward data-set name `name`: its prior the guiding CLIP's softmax over the
    references at `temperature` (the app's way), or, at 0, the exact name (all mass on its own image)."""
    from guidance.reference import ReferencePosterior
    from pipelines import reference
    from pipelines.config import model_location

    location = model_location(BUNDLED_LABEL)
    references = reference.get_reference_set(location)
    if not temperature:
        prior = torch.full((len(references.names),), -1e4)
        prior[name] = 0.0
        return ReferencePosterior(references.images, prior)
    clip = get_clip(BUNDLED_LABEL)
    embeddings = reference.get_reference_embeddings(clip, location, references)
    return reference.reference_loss(
        embeddings, references, clip.encode_text(probe.names[name]), ["text"], [1.0], temperature
    )


def as_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def loop_image(
    probe: Probe, loss, scale: float, recurrence: int, seed: int, steps: int, gradient: str = "x0", noisy: bool = False
) -> np.ndarray:
    """One image of the app's guided loop (DDIM, eta 1) with `loss` on predicted x0 (its gradient with respect to
    x0, or through the UNet to x_t), or with `noisy` on (x_t, a_t)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 3, 32, 32, generator=generator)
    scheduler = make_scheduler("DDIM", probe.ddpm.scheduler_config)
    term = GuidanceTerm("probe", loss, scale, noisy=noisy)
    sample = guided_sample(
        probe.ddpm.unet,
        scheduler,
        noise,
        steps,
        [term],
        generator=[generator],
        eta=1.0,
        recurrence=recurrence,
        gradient_method=gradient,
    )
    return as_uint8(sample[0])


def particle_image(probe: Probe, name: int, seed: int, args) -> np.ndarray:
    """Feynman-Kac steering (Singhal et al. 2025): `--particles` DDIM (eta 1) chains, potential `--lam` x the CLIP
    cosine to the name on predicted x0 (or log p(name | x_t) with `--on xt`), weights the potential's increments,
    multinomial resampling every `--every` steps; optional classifier guidance `--cg` on x_t; the best final
    particle by the potential is delivered."""
    generator = torch.Generator().manual_seed(seed)
    scheduler = probe.scheduler(args.steps)
    count = args.particles
    sample = torch.randn(count, 3, 32, 32, generator=generator)
    previous, log_weights = torch.zeros(count), torch.zeros(count)
    alphas = step_alphas(scheduler, scheduler.timesteps)
    weights = guidance_weights(alphas, len(alphas)).tolist()

    alpha = scheduler.alphas_cumprod[scheduler.timesteps[0]]

    def potential(x: torch.Tensor) -> torch.Tensor:
        if args.kind == "bayes":
            return probe.bayes_log_probability(x, alpha, name)
        if args.on == "xt":
            return probe.log_probability(x, name)
        return args.lam * (probe.features(x.clamp(-1, 1)) @ probe.texts[name])

    for index, timestep in enumerate(scheduler.timesteps):
        alpha = scheduler.alphas_cumprod[timestep]
        with torch.no_grad():
            output = probe.ddpm.unet(sample, timestep).sample
        x0, eps = predicted_x0_and_eps(output, sample, alpha, probe.prediction_type)
        seen = sample if args.on == "xt" else x0
        if args.cg:
            leaf = seen.detach().requires_grad_(True)
            with torch.enable_grad():
                value = potential(leaf)
                (gradient,) = torch.autograd.grad(value.sum(), leaf)
            value = value.detach()
            if args.edit:  # the app's step: x0 moves by strength x w_t along the unit-RMS gradient
                x0 = x0 + args.cg * weights[index] * normalise_per_sample(gradient)
                output, sample = model_output_from_x0_and_eps(x0, eps, alpha, probe.prediction_type)
            else:
                eps = eps - (1 - alpha).sqrt() * args.cg * gradient  # Dhariwal & Nichol's eps-hat
                x0 = (sample - (1 - alpha).sqrt() * eps) / alpha.sqrt()
                output = model_output_from_x0_and_eps(x0, eps, alpha, probe.prediction_type)[0]
        else:
            with torch.no_grad():
                value = potential(seen)
        log_weights += value - previous
        previous = value
        if count > 1 and index + 1 < len(scheduler.timesteps) and (index + 1) % args.every == 0:
            chosen = torch.multinomial(torch.softmax(log_weights, 0), count, replacement=True, generator=generator)
            sample, output, previous = sample[chosen], output[chosen], previous[chosen]
            log_weights = torch.zeros(count)
        with torch.no_grad():
            sample = scheduler.step(output, timestep, sample, eta=1.0, generator=generator).prev_sample
    alpha = scheduler.alphas_cumprod[0]
    with torch.no_grad():
        final = potential(sample.clamp(-1, 1))
    return as_uint8(sample[int(final.argmax())])


def alignment(probe: Probe, names: list[int], args, smooth: tuple[int, float]) -> None:
    """Where the loss's gradient points: for each name, another emoji noised to t and denoised by the DDPM (what
    sampling holds at t), the cosine between -grad of -log p(name | x0) and the way to the named emoji (x* - x0),
    averaged over names, per t."""
    generator = torch.Generator().manual_seed(0)
    alphas = probe.scheduler(50).alphas_cumprod
    kind, gradient_on, low = args.kind, args.on, args.low
    for timestep in (900, 800, 700, 500, 300):
        alpha, cosines = alphas[timestep], []
        for name in names:
            other = (name + 7) % len(probe.names)
            noise = torch.randn(1, 3, 32, 32, generator=generator)
            noisy = alpha.sqrt() * probe.real[other : other + 1] + (1 - alpha).sqrt() * noise
            with torch.no_grad():
                output = probe.ddpm.unet(noisy, timestep).sample
            x0 = predicted_x0_and_eps(output, noisy, alpha, probe.prediction_type)[0].clamp(-1, 1)
            leaf = (noisy if gradient_on == "xt" else x0).detach().requires_grad_(True)
            with torch.enable_grad():
                if kind == "bayes":
                    value = probe.bayes_log_probability(leaf, alpha, name)
                elif kind == "softmax":
                    value = probe.log_probability(leaf, name, smooth)
                else:
                    value = probe.features(leaf) @ probe.texts[name]
                (gradient,) = torch.autograd.grad(value.sum(), leaf)
            if low:  # only the gradient's low frequencies: averaged over low x low blocks
                gradient = F.interpolate(F.adaptive_avg_pool2d(gradient, low), size=gradient.shape[-2:], mode="nearest")
            way = (probe.real[name : name + 1] - x0).flatten()
            cosines.append(F.cosine_similarity(gradient.flatten(), way, dim=0).item())
        print(f"t {timestep}: cos(grad log p(name | {gradient_on}), x* - x0) = {np.mean(cosines):.3f}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=("oracle", "loss", "particles", "classifier", "alignment", "prior"))
    parser.add_argument("--names", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--settings", nargs="*", default=["3,1"], help="strength,recurrence pairs (oracle, loss)")
    parser.add_argument(
        "--kind",
        choices=("cosine", "softmax", "bayes"),
        default="softmax",
        help="the loss: CLIP cosine, CLIP softmax over all names, or the Bayes-optimal noisy classifier (on x_t)",
    )
    parser.add_argument("--clip-state", default="")
    parser.add_argument("--gradient", choices=("x0", "unet"), default="x0", help="the loss probe's gradient")
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--lam", type=float, default=50.0)
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--on", choices=("x0", "xt"), default="x0")
    parser.add_argument("--cg", type=float, default=0.0, help="classifier guidance scale (or strength with --edit)")
    parser.add_argument("--edit", action="store_true", help="apply --cg as the app's loop does: a unit-RMS x0 step")
    parser.add_argument(
        "--temperature",
        type=float,
        nargs="*",
        default=[0.0],
        help="prior probe: the data-set loss with the guiding CLIP's softmax at each temperature (0: the exact name)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--low", type=int, default=0, help="alignment of the gradient averaged to low x low blocks")
    parser.add_argument("--cosine", type=float, default=1.0, help="the oracle's gradient's cosine to the named image")
    parser.add_argument("--smooth", default="0,0", help="copies,sigma of randomized smoothing (loss probe, softmax)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe == "classifier" or args.kind == "bayes":
        args.on = "xt"
    probe = Probe(args.clip_state)
    smooth = (int(args.smooth.split(",")[0]), float(args.smooth.split(",")[1]))
    names = random_names(probe.names, 40, RANDOM_NAMES_SEED, NAMES)[: args.names]
    if args.probe == "alignment":
        return alignment(probe, names, args, smooth)
    settings = args.settings if args.probe in ("oracle", "loss", "prior") else [""]
    if args.probe == "prior":
        settings = [(setting, temperature) for setting in settings for temperature in args.temperature]
    for setting in settings:
        if args.probe == "prior":
            setting, temperature = setting
        started, images, labels = time.perf_counter(), [], []
        for position, name in enumerate(names):
            for seed in range(args.seeds):
                seed += 100 * position
                if args.probe in ("oracle", "loss", "prior"):
                    scale, recurrence = (float(setting.split(",")[0]), int(setting.split(",")[1]))
                    if args.probe == "prior":
                        loss = data_set_loss(probe, name, temperature)
                    elif args.probe == "oracle":
                        target = probe.real[name : name + 1]
                        generator = torch.Generator().manual_seed(seed)

                        def loss(x, target=target, generator=generator):
                            # --cosine c: the oracle's direction mixed with a fresh random one, at cosine c to it
                            way = F.normalize((target - x).detach().flatten(1), dim=1)
                            other = torch.randn(way.shape, generator=generator)
                            other = F.normalize(other - (other * way).sum(1, keepdim=True) * way, dim=1)
                            direction = args.cosine * way + (1 - args.cosine**2) ** 0.5 * other
                            return -(x.flatten(1) * direction).sum(1)
                    elif args.kind == "softmax":

                        def loss(x, name=name):
                            return -probe.log_probability(x, name, smooth)
                    else:

                        def loss(x, name=name):
                            return 1 - probe.features(x) @ probe.texts[name]

                    noisy = args.probe == "prior"
                    images.append(loop_image(probe, loss, scale, recurrence, seed, args.steps, args.gradient, noisy))
                else:
                    images.append(particle_image(probe, name, seed, args))
                labels.append(name)
        seconds = (time.perf_counter() - started) / len(images)
        top1, top3 = hit_rates(probe.judge.ranks(np.stack(images), labels))
        what = f"{args.probe} {setting} {args.gradient} {args.kind} smooth {args.smooth} {args.clip_state}"
        if args.probe == "prior":
            what = f"prior {setting}, " + (f"CLIP at temperature {temperature:g}" if temperature else "exact name")
        print(f"{what}: top 1 {top1:.0%}, top 3 {top3:.0%}, {seconds:.2f} s/image", flush=True)


if __name__ == "__main__":
    main()
