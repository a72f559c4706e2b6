"""General text held out from all feedback: what the capability guard scores base and tuned on.

Written for this package (so its licence is the package's): short plain-English passages of
many kinds — facts, instructions, a recipe, small stories, dialogue, code comments, a letter —
none about the targets a person is likely to teach (openings, lengths, formats). A tuned model
whose per-token loss on these rises has lost some general language ability, whatever it gained.
"""

CAPABILITY_TEXTS: tuple[str, ...] = (
    # facts
    "Water boils at 100 degrees Celsius at sea level. On a high mountain the air pressure is "
    "lower, so water boils at a lower temperature and food takes longer to cook.",
    "The Moon takes about twenty-seven days to go once around the Earth. Because it turns on its "
    "axis in the same time, we always see the same side of it.",
    "Bees visit flowers to collect nectar and pollen. As they move from one flower to the next, "
    "they carry pollen with them, which helps the plants make seeds.",
    "The heart is a muscle that pumps blood around the body. An adult's heart beats about sixty "
    "to a hundred times a minute when the person is resting.",
    "Paper was first made in China nearly two thousand years ago. The idea travelled slowly west "
    "along trade routes and reached Europe many centuries later.",
    "A rainbow appears when sunlight passes through drops of rain. Each drop bends the light and "
    "splits it into colours, from red on the outside to violet on the inside.",
    "Most of the Earth's surface is covered by oceans. They hold almost all of the planet's "
    "water, and they store a great deal of heat from the sun.",
    "Trees grow a new layer of wood every year. Counting the rings in a cut trunk tells you "
    "roughly how old the tree was.",
    # instructions
    "To change a flat tyre, first park on level ground and put the hand brake on. Loosen the "
    "nuts a little before you lift the car, then raise it with the jack and take the wheel off.",
    "Before you paint a wall, wash it and let it dry. Cover the floor, tape the edges, and use "
    "thin coats: two thin coats look better than one thick one.",
    "When you save a document for the first time, give it a name that says what it is and when "
    "it was made, so that you can find it again next month.",
    "To plant a tomato seedling, dig a hole deeper than its pot, set the plant in, and press the "
    "soil firmly around the stem. Water it well and give it a stick to lean on.",
    "If the smoke alarm beeps once every minute, its battery is running low. Replace the "
    "battery, then press the test button to check that the alarm still works.",
    "Wash your hands with soap for at least twenty seconds. Rub the backs of the hands, between "
    "the fingers and under the nails, then rinse and dry them with a clean towel.",
    # recipe
    "Pancakes for four: mix two cups of flour, two eggs, a pinch of salt and two cups of milk "
    "into a smooth batter. Heat a little butter in a pan, pour in a ladle of batter and turn "
    "the pancake when bubbles appear on top.",
    "For a simple tomato soup, soften an onion in olive oil, add two cans of tomatoes and a cup "
    "of stock, and simmer for twenty minutes. Blend until smooth and season with salt and pepper.",
    "To cook rice, rinse one cup of it until the water runs clear. Put it in a pot with one and "
    "a half cups of water, bring it to a boil, cover, and cook on low heat for fifteen minutes.",
    # stories
    "The old lighthouse keeper climbed the stairs every evening at dusk. One night the lamp "
    "would not light, so he stood on the rocks with a lantern until the fishing boats came home.",
    "Maya found a small grey kitten under the porch after the storm. She gave it a saucer of "
    "milk and an old jumper to sleep on, and by morning it had decided to stay.",
    "The train stopped in the middle of a field and nobody knew why. After an hour a farmer "
    "walked up to the windows with a basket of apples and handed them out to the passengers.",
    "Every Saturday the brothers raced their bicycles to the bridge. The younger one always "
    "lost, until the week he found a shorter path through the woods behind the school.",
    "When the power went out, the family lit candles and played cards at the kitchen table. "
    "Years later it was the evening all of them remembered best.",
    # dialogue and letters
    "\"Is this seat taken?\" asked the woman with the umbrella. \"No, please sit down,\" said the "
    "man, and he moved his newspaper so that she had room.",
    "Dear Sam, thank you for the books you sent. I have already finished the first one and I "
    "am saving the second for the long train journey next week. With love, Ana.",
    "Dear neighbours, the water will be turned off on Tuesday morning from nine until noon "
    "while the pipes in the basement are repaired. We are sorry for the trouble.",
    # explanations
    "A budget is a plan for your money. You write down what comes in each month, then decide "
    "how much goes to rent, food, travel and savings before you spend any of it.",
    "Exercise makes the heart and lungs stronger. Even a brisk walk of half an hour on most days "
    "lowers the risk of many illnesses and helps people sleep better.",
    "A map uses a scale to show distance. If one centimetre stands for one kilometre, a road "
    "that is five centimetres long on the map is five kilometres long on the ground.",
    "Interest is the price of borrowing money. If you borrow a hundred pounds at five percent a "
    "year, you owe one hundred and five pounds after one year.",
    "Plants make their own food from light, water and carbon dioxide. This process releases "
    "oxygen into the air, which animals and people need to breathe.",
    "A good meeting has a clear purpose, a short list of topics and a set end time. Someone "
    "writes down what was decided and who will do what next.",
    # code comments and technical notes
    "# Read the settings file once at start-up and keep the values in memory.\n"
    "# If the file is missing, fall back to the defaults and write them out.",
    "# This function returns the largest number in the list.\n"
    "# It raises an error when the list is empty, because there is no answer then.",
    "// Retry the request up to three times, waiting a little longer after each failure,\n"
    "// so that a short network problem does not stop the whole program.",
    "# Sort the records by date, newest first, then keep only the first ten\n"
    "# so that the page loads quickly even when there are thousands of them.",
    "A variable is a name for a value that a program keeps in memory. Giving variables clear "
    "names makes code much easier for other people to read and change.",
    # history, geography, everyday life
    "The city grew up beside the river because boats could carry goods cheaply. Markets, mills "
    "and bridges followed, and the old stone quay is still there today.",
    "Many people in the village keep chickens in their gardens. The birds eat kitchen scraps "
    "and insects, and in return they lay fresh eggs almost every day.",
    "The library opens at eight on weekdays and at ten on Saturdays. Books can be borrowed for "
    "three weeks and renewed twice, online or at the front desk.",
    "In winter the lake freezes so hard that people walk across it. In spring the ice cracks "
    "with a sound like thunder and breaks into large floating plates.",
)
