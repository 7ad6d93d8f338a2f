"""Few-shot fine-tuning keeps the step that reconstructs the person's own shots best."""

from __future__ import annotations

import pytest
import torch

from animate_cli.config import FinetuneConfig
from animate_cli.finetune import ShotBatch, embed_person, finetune_person, shot_reconstruction_loss
from animate_cli.io.images import load_image
from animate_cli.landmarks import create_backend, detect_photo_landmarks
from animate_cli.landmarks.crop import crop_from_landmarks
from animate_cli.losses import ContentLoss
from animate_cli.models import TalkingHeadModel
from animate_cli.person import Shot


@pytest.fixture(scope="module")
def shot(portrait_path) -> Shot:
    image = load_image(portrait_path)
    points = detect_photo_landmarks(create_backend("dlib"), image)
    return Shot.from_photo(str(portrait_path), image, points, crop_from_landmarks(points, 32))


def own_loss(model: TalkingHeadModel, person, shot: Shot, loss: ContentLoss) -> float:
    """The shot reconstruction loss of a person (fine-tuned generator when it has one)."""
    import copy

    generator = copy.deepcopy(model.generator)
    if person.generator_state is not None:
        generator.load_state_dict(person.generator_state)
    batch = ShotBatch([shot], model.config.image_size, torch.device("cpu"), model.config.guidance, seed=0,
                      blend_region=model.config.region_input)
    return shot_reconstruction_loss(generator, person.adain_params, batch, loss, 4)


def test_fine_tuning_keeps_its_best_step_and_records_the_checks(tiny_weights, shot) -> None:
    model = TalkingHeadModel.from_pretrained(tiny_weights)
    loss = ContentLoss()
    torch.manual_seed(0)
    person = finetune_person(model, [shot], FinetuneConfig(steps=10, lr_generator=1e-3), loss)
    record = person.record
    assert [step for step, _ in record["shot_losses"]] == [0, 5, 10]
    best_step, best = min(record["shot_losses"], key=lambda entry: entry[1])
    assert record["kept_step"] == best_step == person.finetune_steps
    assert best < record["shot_losses"][0][1]  # an untrained model does learn the photo in 10 steps
    assert own_loss(model, person, shot, loss) == pytest.approx(best, rel=1e-3)


def test_fine_tuning_that_only_hurts_leaves_the_person_as_embedded(tiny_weights, shot) -> None:
    model = TalkingHeadModel.from_pretrained(tiny_weights)
    loss = ContentLoss()
    # Training that climbs the content loss (negative weights): every step makes the shots worse.
    config = FinetuneConfig(steps=5, lr_generator=1e-3, content_weight=-5.0, raw_content_weight=-5.0)
    person = finetune_person(model, [shot], config, loss)
    assert person.record["kept_step"] == 0 and person.finetune_steps == 0
    assert person.generator_state is None
    embedded = embed_person(model, [shot], torch.device("cpu"))
    assert torch.equal(person.adain_params, embedded.adain_params)
    assert own_loss(model, person, shot, loss) == pytest.approx(person.record["shot_losses"][0][1], rel=1e-4)
