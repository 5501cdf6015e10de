"""Browser end-to-end tests (marker `e2e`); see tests/e2e/test_browser.py."""


def pytest_configure(config):
    # also registered in pyproject.toml; registering here keeps `pytest tests/e2e` warning-free on its own
    config.addinivalue_line("markers", "e2e: end-to-end tests in a real (headless) browser; skipped without chromium/playwright")
