"""`python -m pipelines.preprocess {vocab,corpus,task} --help`."""
import sys

from pipelines.preprocess.cli import main

sys.exit(main())
