"""Few-shot fine-tuning of a new person (paper section 3.3).

The shots are embedded and averaged into ``e_new``; the generator's AdaIN parameters start at
``psi' = P e_new`` and the discriminator's identity vector at ``w' = w0 + e_new``; then a short GAN
training on the shots themselves: the generator reconstructs each shot from its landmark image
(content loss + hinge adversarial loss + feature matching), the discriminator learns to tell
the shots from the reconstructions (hinge loss). ``steps=0`` is the paper's feed-forward mode.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .config import FinetuneConfig, resolve_steps
from .errors import DivergenceError
from .landmarks.drawing import draw_landmark_images
from .landmarks.perturb import perturb_landmarks
from .landmarks.regions import region_tensor
from .losses import ContentLoss, feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss
from .models import TalkingHeadModel
from .person import Person, Shot
from .render.warp import FaceWarper
from .tensors import images_to_tensor

log = logging.getLogger(__name__)


def nearest_shot_indices(shot_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """For each target (T, 68, 2), the index of the shot (K, 68, 2) closest in normalised pose."""
    def normalise(points: np.ndarray) -> np.ndarray:
        centred = points - points.mean(axis=-2, keepdims=True)
        scale = np.sqrt((centred**2).sum(axis=(-2, -1), keepdims=True) / points.shape[-2]) + 1e-6
        return centred / scale

    shots, targets = normalise(shot_points), normalise(target_points)
    distances = ((targets[:, None] - shots[None]) ** 2).sum(axis=(-2, -1))
    return distances.argmin(axis=1)


def round_trip_warps(image: np.ndarray, points: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` versions of ``image`` warped to perturbed landmarks and back to ``points``."""
    warper = FaceWarper(image, points)
    result = []
    for _ in range(count):
        moved_points = perturb_landmarks(points, rng)
        result.append(FaceWarper(warper.warp(moved_points), moved_points).warp(points))
    return result


class ShotBatch:
    """The shots as tensors: images, landmark images and (for warp guidance) warped sources and,
    when the generator blends only in a region, the shots' blend regions.

    With warp guidance each shot is reconstructed from another shot warped to its landmarks
    (the nearest other one in pose), so the correction learns what the warp gets wrong. A single
    shot has no other: it gets ``ROUND_TRIPS`` samples instead, each the photo warped to made-up
    landmarks (mouth opened or closed, a blink, a head turn; as in meta-training's single-photo
    episodes) and warped back, with the photo itself as the target. The correction so learns to
    restore this person's real mouth, teeth and eyes from what the warp makes of them.
    """

    ROUND_TRIPS = 8

    def __init__(self, shots: Sequence[Shot], size: int, device: torch.device, guidance: str, seed: int = 0,
                 blend_region: str | None = None):
        points = np.stack([s.crop_points for s in shots])
        images = [s.crop_image for s in shots]
        self.warped = None
        if guidance == "warp" and len(shots) == 1:
            warped = round_trip_warps(images[0], points[0], self.ROUND_TRIPS, np.random.default_rng(seed))
            images, points = images * len(warped), np.repeat(points, len(warped), axis=0)
            self.warped = images_to_tensor(warped, device)
        elif guidance == "warp":
            warpers = [FaceWarper(s.crop_image, s.crop_points) for s in shots]
            warped = []
            for index, shot in enumerate(shots):
                others = [j for j in range(len(shots)) if j != index]
                source = others[int(nearest_shot_indices(points[others], shot.crop_points[None])[0])]
                warped.append(warpers[source].warp(shot.crop_points))
            self.warped = images_to_tensor(warped, device)
        self.images = images_to_tensor(images, device)
        self.points = torch.as_tensor(points, dtype=torch.float32, device=device)
        self.landmark_images = images_to_tensor(draw_landmark_images(points, size), device)
        self.region = (region_tensor(points, size, blend_region, device)
                       if guidance == "warp" and blend_region is not None else None)

    def __len__(self) -> int:
        return self.images.shape[0]

    def select(self, index: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """(images, landmark images, warped or None, region or None, landmarks) of the shots at ``index``."""
        warped = None if self.warped is None else self.warped[index]
        region = None if self.region is None else self.region[index]
        return self.images[index], self.landmark_images[index], warped, region, self.points[index]


def embed_person(model: TalkingHeadModel, shots: Sequence[Shot], device: torch.device) -> Person:
    """Feed-forward initialisation: e_new, psi' = P e_new and w' = w0 + e_new."""
    batch = ShotBatch(shots, model.config.image_size, device, "none")
    with torch.no_grad():
        embedding = model.embed(batch.images, batch.landmark_images)
        adain_params = model.generator.project(embedding[None])[0]
        discriminator_vector = model.discriminator.w0 + embedding
    return Person(shots=list(shots), embedding=embedding.cpu(), adain_params=adain_params.cpu(),
                  discriminator_vector=discriminator_vector.cpu())


def finetune_person(model: TalkingHeadModel, shots: Sequence[Shot], config: FinetuneConfig,
                    content_loss: ContentLoss | None, device: torch.device | str = "cpu",
                    progress: Callable[[int], None] | None = None) -> Person:
    """Embed the shots, then fine-tune the generator and discriminator on them for ``config.steps``
    (None: the default for this many shots); the step that reconstructs the shots best is kept."""
    config = resolve_steps(config, len(shots))
    device = torch.device(device)
    model = model.to(device)
    person = embed_person(model, shots, device)
    if config.steps == 0:
        return person
    if content_loss is None:
        raise ValueError("fine-tuning needs a content loss")

    generator = copy.deepcopy(model.generator).train()
    discriminator = copy.deepcopy(model.discriminator).train()
    adain_params = torch.nn.Parameter(person.adain_params.to(device).clone())
    discriminator_vector = torch.nn.Parameter(person.discriminator_vector.to(device).clone())
    optimizer_g = torch.optim.Adam([*generator.parameters(), adain_params], lr=config.lr_generator,
                                   betas=(0.5, 0.999))
    optimizer_d = torch.optim.Adam([*discriminator.parameters(), discriminator_vector],
                                   lr=config.lr_discriminator, betas=(0.5, 0.999))
    content_loss = content_loss.to(device)
    batch = ShotBatch(shots, model.config.image_size, device, model.config.guidance, seed=config.seed,
                      blend_region=model.config.region_input)
    rng = torch.Generator().manual_seed(config.seed)
    batch_size = min(config.batch_size, len(batch))
    history = []
    # The person's own shots decide which step is kept: fine-tuning never leaves them worse
    # reconstructed than feed-forward (step 0) did.
    best_score = shot_reconstruction_loss(generator, adain_params, batch, content_loss, batch_size)
    best_step, best_state = 0, None
    scores = [(0, best_score)]
    for step in range(config.steps):
        index = torch.randperm(len(batch), generator=rng)[:batch_size]
        images, landmark_images, warped, region, points = batch.select(index)
        psi = adain_params[None].expand(batch_size, -1)

        fake, _, raw = generator.forward_parts(landmark_images, psi, warped, region)
        real_out = discriminator(images, landmark_images, w=discriminator_vector)
        fake_out = discriminator(fake, landmark_images, w=discriminator_vector)
        loss_g = (config.content_weight * content_loss(fake, images, points)
                  + hinge_generator_loss(fake_out.score)
                  + config.feature_matching_weight * feature_matching_loss(real_out.features, fake_out.features))
        if warped is not None and config.raw_content_weight:
            loss_g = loss_g + config.raw_content_weight * content_loss(raw, images, points)
        optimizer_g.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer_g.step()

        real_out = discriminator(images, landmark_images, w=discriminator_vector)
        fake_out = discriminator(fake.detach(), landmark_images, w=discriminator_vector)
        loss_d = hinge_discriminator_loss(real_out.score, fake_out.score)
        optimizer_d.zero_grad(set_to_none=True)
        loss_d.backward()
        optimizer_d.step()

        if not (torch.isfinite(loss_g) and torch.isfinite(loss_d)):
            raise DivergenceError(f"fine-tuning diverged at step {step + 1} (loss is NaN or inf)")
        history.append((loss_g.item(), loss_d.item()))
        if (step + 1) % CHECK_EVERY == 0 or step + 1 == config.steps:
            score = shot_reconstruction_loss(generator, adain_params, batch, content_loss, batch_size)
            scores.append((step + 1, score))
            if score < best_score:
                best_score, best_step = score, step + 1
                best_state = ({k: v.detach().cpu().clone() for k, v in generator.state_dict().items()},
                              adain_params.detach().cpu().clone(), discriminator_vector.detach().cpu().clone())
        if progress is not None:
            progress(1)

    person.record = {"steps": config.steps, "kept_step": best_step, "content_loss": content_loss.description,
                     "first_losses": history[0], "last_losses": history[-1],
                     "shot_losses": [(step, round(score, 5)) for step, score in scores]}
    log.info("fine-tuned %d steps: G loss %.3f -> %.3f; shot reconstruction %.4f -> %.4f, kept step %d",
             config.steps, history[0][0], history[-1][0], scores[0][1], best_score, best_step)
    if best_state is None:
        return person  # no step beat feed-forward: the person stays as embedded
    person.generator_state, person.adain_params, person.discriminator_vector = best_state
    person.finetune_steps = best_step
    return person


# Steps between checks of the shots' reconstruction (each costs one generator pass over the shots).
CHECK_EVERY = 5


def shot_reconstruction_loss(generator: torch.nn.Module, adain_params: torch.Tensor, batch: ShotBatch,
                             content_loss: ContentLoss, batch_size: int) -> float:
    """The content loss of the generator's frames against the shots themselves (mean over the shots)."""
    was_training = generator.training
    generator.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(batch), batch_size):
            index = torch.arange(start, min(start + batch_size, len(batch)))
            images, landmark_images, warped, region, points = batch.select(index)
            psi = adain_params[None].expand(len(index), -1)
            fake, _, _ = generator.forward_parts(landmark_images, psi, warped, region)
            total += float(content_loss(fake, images, points)) * len(index)
    generator.train(was_training)
    return total / len(batch)
