"""Batch analysis (``svdmark analyze``): discovery of DICOM in folders and zips, grouping into
series, resumable runs, and results/errors tables (CSV + Parquet).

    from svdmark.batch.run import Runner
    report = Runner(config, out_dir, workers=2).run([Path("archive"), Path("more.zip")])
"""
