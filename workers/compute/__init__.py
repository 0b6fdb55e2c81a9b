"""Pure compute functions (pandas / scikit-learn) shared by the Celery tasks and the evaluator.

They take DataFrames and return DataFrames; they never touch a database.
"""
