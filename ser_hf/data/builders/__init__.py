"""Corpus builders: ``datasets.GeneratorBasedBuilder`` subclasses reading a local copy in each corpus's layout.

    builder = BUILDERS["emodb"](data_dir="path/to/emodb", cache_dir=None)
    builder.download_and_prepare()          # no network: reads data_dir only
    ds = builder.as_dataset(split="train")  # every clip; load_corpus re-splits by speaker
"""

from ser_hf.data.builders._common import CorpusBuilder, SERBuilderConfig, code_hash
from ser_hf.data.builders.acted import EMOVO, SAVEE, TESS
from ser_hf.data.builders.crema_d import CremaD, CremaDConfig
from ser_hf.data.builders.emodb import EmoDB
from ser_hf.data.builders.iemocap import IEMOCAP
from ser_hf.data.builders.msp_podcast import MSPPodcast
from ser_hf.data.builders.ravdess import RAVDESS
from ser_hf.data.builders.user import Folder, Manifest

BUILDERS = {"emodb": EmoDB, "ravdess": RAVDESS, "crema_d": CremaD, "iemocap": IEMOCAP, "msp_podcast": MSPPodcast,
            "tess": TESS, "savee": SAVEE, "emovo": EMOVO, "manifest": Manifest, "folder": Folder}

__all__ = ["BUILDERS", "EMOVO", "IEMOCAP", "SAVEE", "TESS", "CorpusBuilder", "CremaD", "CremaDConfig", "EmoDB",
           "Folder", "MSPPodcast", "Manifest", "RAVDESS", "SERBuilderConfig", "code_hash"]
