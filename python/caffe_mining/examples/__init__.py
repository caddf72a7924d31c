"""Helpers of the worked examples in ``models/`` (siamese digits, HardNet patches, embedding digits).

Each module is one concept; the drivers ``models/siamese_digits/run.py`` and ``models/hardnet_patches/run.py``
combine them:

- :mod:`.pairs_hdf5`: pair databases in the HDF5 layout Caffe's ``HDF5Data`` layer reads.
- :mod:`.digits`: scikit-learn's 8x8 digits split by sample into train / held-out, and pair sampling.
- :mod:`.digits_classes`: the same digits split by class (0-6 train, 7-9 held out) as P x K batch databases.
- :mod:`.pk_batches`: P x K batches in file order for a data layer that does not shuffle.
- :mod:`.patches`: 32x32 patch pairs cut from scikit-image's photos, HPatches-style (keypoint, random
  homography, photometric change).
- :mod:`.metrics`: ROC AUC, FPR at 95 % recall, nearest-neighbour accuracy, Recall@k.
- :mod:`.caffe_log`: training curves parsed from a ``caffe train`` log.
- :mod:`.caffe_run`: finding the ``caffe`` binary and pycaffe, rendering prototxt files, running ``caffe train``.
- :mod:`.embedding`: descriptors of an array of images through a pycaffe deploy net.
- :mod:`.plots`: the PNG figures.
- :mod:`.experiment`: the variants x seeds loop both drivers share (train, evaluate snapshots, summarise).

Nothing here is imported by ``caffe_mining`` itself; only :mod:`.embedding` and parts of :mod:`.caffe_run`
import pycaffe, and only when called.
"""
