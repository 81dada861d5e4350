"""The models: the masked-LM backbone, the classifier interface and its two classifiers, the sentence encoder."""
