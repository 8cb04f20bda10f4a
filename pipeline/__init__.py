"""The run layer: one run, many stages.

    entry scripts (main.py, evaluate.py, defend.py, visualize.py, experiments/)
        → pipeline (this package: RunConfig and its flags, RunDir, prepare/load_trained, stages, schedule)
            → library (datasets, models, attacks, regularizers, inference, metrics, defenses, training,
                       evaluation, visualization)
                → utils (errors, atomic I/O, seeding, device, declared parameters)

No package below this one imports it (tests/test_layers.py walks the imports).
"""
