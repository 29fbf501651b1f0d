"""Store-and-forward: reports wait on flash (`queue.FlashQueue`) until a link's ack says the gateway has them."""
