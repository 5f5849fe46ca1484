"""The model layer: the paper's 3D U-Net, its pre-processing, augmentation, training and inference.

    model       the network of Fig. 3 (UNet3D, ModelConfig)
    preprocess  NIfTI/array -> the training grid, min-max normalisation (CaseVolume)
    augment     the paper's augmentation and the batch sampler
    prefetch    batches made ahead of the training step (bitwise the same batches)
    train       training with tuning-Dice selection (step 03, ``amt train``)
    infer       sliding-window inference, the model file and its card
    predict     ``amt predict``: the trained model on a new patient's CT (NIfTI, DICOM, PACS)

Imports only from the layers below (evaluation, data, ground); nothing here is imported by them.
"""
