"""The feature transform: which raw fields the model reads and how they become its inputs.

``transform`` holds the fitted value and its numpy application (no Spark
needed); ``spark`` fits it on the train split and applies it as column
expressions.
"""
