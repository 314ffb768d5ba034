"""Support for qtl's tests and benchmarks (and for anyone testing code built on qtl); never imported by
the rest of the library.

    image_folders  small generated ImageFolder datasets and zips (no network, no shared data)
    paper_demo     PennyLane's quantum transfer learning demo transcribed as written: the independent
                   reference that the faithfulness test and bench/e2e.py hold qtl against
    processes      child processes that die with the process that started them (servers of tests)
    served_api     the REST API (`qtl.deploy.server`) on uvicorn in a thread, and a stdlib HTTP client
    served_app     `streamlit run app.py` on a free port, offline, and Debian's Chromium for Playwright
    visitors       concurrent browser visitors of the served app (the load test and bench/load_app.py)
"""
