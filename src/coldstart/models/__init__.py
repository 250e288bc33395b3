"""Model registry: name -> class. A new model is one module plus one line here."""

from coldstart.models.base import Recommender
from coldstart.models.bpr import MFBPR, LightGCN
from coldstart.models.cb2cf import CB2CF
from coldstart.models.clcrec import CLCRec
from coldstart.models.cmclrec import CMCLRec
from coldstart.models.cierec import CIERec
from coldstart.models.content_sim import ContentSim
from coldstart.models.cvar import CVAR
from coldstart.models.deepmusic import DeepMusic
from coldstart.models.dropoutnet import DropoutNet
from coldstart.models.duif import DUIF
from coldstart.models.gir import GIR
from coldstart.models.heater import Heater
from coldstart.models.melu import MeLU
from coldstart.models.mtpr import MTPR
from coldstart.models.popularity import Popularity
from coldstart.models.random_baseline import RandomScores
from coldstart.models.sasrec import SASRec
from coldstart.models.vbpr import VBPR
from coldstart.models.user_content_sim import UserContentSim

MODELS: dict[str, type[Recommender]] = {
    Popularity.name: Popularity,
    RandomScores.name: RandomScores,
    MFBPR.name: MFBPR,
    LightGCN.name: LightGCN,
    CLCRec.name: CLCRec,
    DUIF.name: DUIF,
    VBPR.name: VBPR,
    DeepMusic.name: DeepMusic,
    DropoutNet.name: DropoutNet,
    MTPR.name: MTPR,
    CB2CF.name: CB2CF,
    Heater.name: Heater,
    ContentSim.name: ContentSim,
    CIERec.name: CIERec,
    GIR.name: GIR,
    UserContentSim.name: UserContentSim,
    MeLU.name: MeLU,
    SASRec.name: SASRec,
    CMCLRec.name: CMCLRec,
    CVAR.name: CVAR,
}

__all__ = ["MODELS", "Recommender"]
