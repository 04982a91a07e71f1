"""The classifier's consumer loop as main wires it."""

from services.classifier.config import ClassifierSettings
from services.classifier.handler import Topics
from services.classifier.main import runner_options


def test_the_runner_knows_every_topic_the_handler_writes_to() -> None:
    # Without them, a transaction the broker completed without its markers (a broker in its
    # controlled shutdown) is never ended, and a restart waits on its offsets for good.
    topics = Topics(classified="t.classified", context="t.context", forwarded_labels="t.fwd")

    options = runner_options(ClassifierSettings(), topics)

    assert options.transactional
    assert options.output_topics == ("t.classified", "t.context", "t.fwd")
    assert runner_options(ClassifierSettings(), Topics("a", "b")).output_topics == ("a", "b")
