"""Tests of the luoctl client: parser, commands against a fake daemon, the console script."""
