"""segkit's built-in dataset layouts (entry-point group ``segkit.datasets``).

* ``oxford_pet``: :class:`segkit_datasets.oxford_pet.OxfordPet`, the official
  Oxford-IIIT Pet layout.
* ``folder``: :class:`segkit_datasets.folder.FolderDataset`, ``images/`` + ``masks/``.
* ``synthetic``: :class:`segkit_datasets.synthetic.SyntheticPet`, generated pet-like
  images written in the Oxford-IIIT Pet layout.

Nothing is imported here, so listing plugins does not import numpy or PIL.
"""
